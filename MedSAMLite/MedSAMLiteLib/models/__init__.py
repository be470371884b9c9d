"""Models: the catalogue and the user's cache of weights (`store`), checkpoint conversion to OpenVINO
(`conversion/`), and the OpenVINO backends the core runs (`backends`).

Built on the core (profiles, preprocessing) and never imported by it: the core takes a backend object.
"""
