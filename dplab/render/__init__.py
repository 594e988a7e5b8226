"""Part II: the layered dual-pixel renderer (RDPD Sec. 3), its slow aperture-sampling references,
light fields, procedural scenes and the SYNTHIA-SF reader, the synthetic-dataset writer behind
``python -m dplab synth`` and NIMAT's view synthesis.
"""
