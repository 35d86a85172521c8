"""Statistics for rankexp experiments: pure functions, no I/O.

The control plane calls :func:`analyze` with a dict (or an
:class:`AnalysisInput`) shaped like the ``rankexp analyze`` JSON input (``mode:
interleaving`` for an interleaving experiment, :class:`InterleavingInput`) and gets
the decision record back; :class:`InputError` names the bad field.
"""

from rankexp.analysis.compare import Comparison, compare, inferiority_test
from rankexp.analysis.decide import DECISIONS, analyze
from rankexp.analysis.drift import ks_binned, psi
from rankexp.analysis.interleaving import (
    InterleavingInput,
    analyze_interleaving,
    parse_interleaving_input,
    preference,
    preference_test,
)
from rankexp.analysis.models import (
    METRICS,
    AnalysisInput,
    DriftConfig,
    Histogram,
    InputError,
    VariantData,
    parse_duration,
    parse_input,
)
from rankexp.analysis.power import (
    design_effect,
    power_at,
    required_samples,
    required_samples_per_variant,
)
from rankexp.analysis.sequential import (
    cs_half_width,
    mixing_variance,
    msprt_log_lr,
    msprt_p_value,
    msprt_p_value_below,
)
from rankexp.analysis.stats import (
    fixed_p_below,
    fixed_test,
    holm,
    ratio_estimate,
    srm_test,
    welch_df,
)

__all__ = [
    "DECISIONS",
    "METRICS",
    "AnalysisInput",
    "Comparison",
    "DriftConfig",
    "Histogram",
    "InputError",
    "InterleavingInput",
    "VariantData",
    "analyze",
    "analyze_interleaving",
    "compare",
    "cs_half_width",
    "design_effect",
    "fixed_p_below",
    "fixed_test",
    "holm",
    "inferiority_test",
    "ks_binned",
    "mixing_variance",
    "msprt_log_lr",
    "msprt_p_value",
    "msprt_p_value_below",
    "parse_duration",
    "parse_input",
    "parse_interleaving_input",
    "power_at",
    "preference",
    "preference_test",
    "psi",
    "ratio_estimate",
    "required_samples",
    "required_samples_per_variant",
    "srm_test",
    "welch_df",
]
