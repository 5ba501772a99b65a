"""The thin napari layer: reader, writer, sample data and the dock widgets.

Everything here converts between napari layers and the headless objects of
:mod:`napari_ctreport.io`, :mod:`napari_ctreport.report` and :mod:`napari_ctreport.analysis`.
"""
