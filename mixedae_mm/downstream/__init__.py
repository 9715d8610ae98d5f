"""Registrations for mmsegmentation and mmdetection.

Imported only by transfer configs, e.g.
``custom_imports=dict(imports=['mixedae_mm.downstream.mmseg'])``, so that
``import mixedae_mm`` never imports mmseg or mmdet.
"""
