"""Report tests: matplotlib on the Agg backend (the synthetic results sets are in tests/conftest.py)."""

import matplotlib

matplotlib.use("Agg")
