"""Compatibility layers: run code written for other feature-visualization libraries on devvis.

``devvis.compat.lucent`` takes Lucent (``torch-lucent``) code unchanged after one import line:

>>> from devvis.compat.lucent import render, param, transform, objectives
"""
