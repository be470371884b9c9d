"""The Slicer side of MedSAMLiteLib: MRML nodes in (`inputs`), segments out (`segments`), on the main thread.

The one part of the package that imports slicer and vtk; the core and the engine never import it.
"""
