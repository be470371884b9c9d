"""`medficient serve`: a local web app to open a scan, draw boxes, propagate, correct and save.

The server keeps one `Session` per browser tab (scan, labels, objects, undo history, the
embeddings of the slices being shown, a propagation job) and reuses medficient.inference
for every mask, so the app gives the same masks as `medficient predict` / `segment`.
"""
