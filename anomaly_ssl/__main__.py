"""``python -m anomaly_ssl`` (also the entry point for ``torchrun -m anomaly_ssl``)."""

from anomaly_ssl.cli import main

if __name__ == "__main__":
    main()
