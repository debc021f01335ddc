"""Figures for the notebooks, one submodule per notebook topic."""
