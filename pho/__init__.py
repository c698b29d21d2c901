"""pho: forward models of astronomical images with exact likelihood gradients.

A scene of galaxies and stars on the sky becomes expected counts in the pixels of real
exposures, each source a mixture of Gaussians convolved analytically with a Gaussian-mixture
PSF. See README.md for the set-up and docs/ for the model and its conventions.
"""

from .errors import (
    PhoBackendError,
    PhoConvergenceWarning,
    PhoLockError,
    PhoDataError,
    PhoDataWarning,
    PhoError,
    PhoRangeError,
    PhoValueError,
    PhoWarning,
)
from .psf import PSFMixture
from .psffit import fit_psf_mixture
from .psfgrid import PSFGrid
from .psfgridfit import fit_psf_grid
from . import gaussians, transforms
from .exposure import Exposure
from .likelihood import Likelihood, render
from .mc import ExactSersic, MonteCarloRenderer
from .sources import PointSource, Scene, Sersic
from .transforms import LogisticTransform, TransformedLikelihood
from .priors import LogUniform, Priors, TruncatedNormal, Uniform, default_priors
from .fit import FixedParameters, OptimizeResult, optimize
from .sample import SampleResult, sample
from .nuts import sample_nuts

__version__ = "0.1.0"

__all__ = [
    "PSFMixture",
    "fit_psf_mixture",
    "PSFGrid",
    "fit_psf_grid",
    "PointSource",
    "Sersic",
    "Scene",
    "Exposure",
    "Likelihood",
    "render",
    "MonteCarloRenderer",
    "ExactSersic",
    "gaussians",
    "transforms",
    "LogisticTransform",
    "TransformedLikelihood",
    "Priors",
    "Uniform",
    "LogUniform",
    "TruncatedNormal",
    "default_priors",
    "optimize",
    "OptimizeResult",
    "FixedParameters",
    "sample",
    "sample_nuts",
    "SampleResult",
    "PhoError",
    "PhoValueError",
    "PhoRangeError",
    "PhoDataError",
    "PhoBackendError",
    "PhoLockError",
    "PhoWarning",
    "PhoConvergenceWarning",
    "PhoDataWarning",
]
