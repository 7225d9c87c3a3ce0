"""The 3D Slicer side without Qt: the scene adapter (``scene``), a run through the engine process (``run``: its
segments ``plan``, files ``exchange`` and ``folders``, engine ``process``, result ``stats`` and ``views``), review and
refine (``review``), runs on a server (``remote_run``), the module's settings (``parameters``), dependency checks and
installs (``deps``) and saved support sets (``support_set``).

May import the top level, ``models.registry``, MRML (``slicer``, ``vtk``), numpy and ``packaging`` (shipped with
Slicer), and psutil when it is installed; never torch, sam2, SimpleITK or slicerio, and never ``io``, ``method`` or
``cli`` (the module loads this before they can be installed).
"""

from ..options import RunSettings
from .plan import SupportPair
from .run import SegmentationRun
from .support_set import load_support_set, save_support_set

__all__ = ["RunSettings", "SegmentationRun", "SupportPair", "load_support_set", "save_support_set"]
