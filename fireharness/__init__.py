"""fireharness core: paths, the plug-in registry, the trajectory record schema and statistics.

The plug-in folders (tasks/, tools/, methods/, models/, finetune/) sit beside this package at the
top of the repository, as FireAct laid them out; this package holds only what they share.
"""
__version__ = "0.1.0"
