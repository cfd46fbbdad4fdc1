"""Assemblies of components into trainable agents, and the experience pipeline that feeds them."""
