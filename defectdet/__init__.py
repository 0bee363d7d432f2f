"""defectdet: industrial defect detection from focal-loss training to a Jetson camera loop.

This module holds the version only and imports nothing heavy, so `import defectdet.runtime`
stays torch-free on the edge device.
"""

__version__ = "0.1.0"
