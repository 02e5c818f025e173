"""radfusion: radiomics, deep-learning and fusion models for ultrasound lesion classification.

Data flows one way through the stages, one subpackage each::

    data (manifest, readers, validation, synthetic cohort)
      -> preprocessing (ROI crop, resize, normalisation, augmentation)
      -> splits
      -> radiomics (PyRadiomics) / deep (MONAI ResNet)
      -> selection (ICC, Spearman, LASSO) -> models (classifier zoo)
      -> fusion (Merged models) -> evaluation / stats -> report
    pipeline orchestrates a resumable run folder; cli is the command line.
"""

__version__ = "0.1.0"
