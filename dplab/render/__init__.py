"""Part II: the layered dual-pixel renderer (RDPD Sec. 3), light fields, procedural scenes,
the synthetic-dataset writer behind ``python -m dplab synth`` and NIMAT's view synthesis.
"""
