"""The command line, ``python -m dplab COMMAND``: synth, train, evaluate, weights.
"""
