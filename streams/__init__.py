"""streams: a Kappa-architecture event processor for ad CTR and payment fraud."""

__version__ = "0.1.0"
