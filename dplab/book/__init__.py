"""The chapter runtime and figure helpers: imported by the book's notebooks only.
"""
