"""anomaly-ssl: self-supervised anomaly detection for event sequences.

Pretrain a masked-event Transformer on unlabelled sequences, score every
sequence (kNN/density on embeddings, masked-event surprise, PyOD detectors),
and sharpen the detector with a few labels gathered in Label Studio.
"""

from ._version import __version__

__all__ = ["__version__"]
