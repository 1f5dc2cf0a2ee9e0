"""Mask R-CNN transfer configs (one per method, size and schedule); files compose by importing each other."""
