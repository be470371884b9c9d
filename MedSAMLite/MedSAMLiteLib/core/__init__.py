"""The segmentation core: pure numpy (and OpenCV's resize), no files, processes or Slicer.

A volume's preset and slices, the published 2D and 3D pipelines, zoom windows and the embedding cache,
all driven through a backend object handed in (`models/` builds one). Nothing here imports the other
subpackages, so every front end (the engine for Slicer, the headless command) shares exactly these rules.
"""
