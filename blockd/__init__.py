"""blockd: an ISP-side appliance that enforces court-ordered blocklists."""

__version__ = "0.1.0"
