"""FateSAMLib: few-shot 3D segmentation with frozen SAM2 modules (FATE-SAM), without Slicer or Qt."""

__version__ = "0.1.0"
