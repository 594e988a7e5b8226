"""Evaluation: methods (networks, Wiener, MPI) behind one call signature, scored side by side.
"""
