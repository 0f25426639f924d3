"""`genprog_direct`: the `genprog` pipeline with the baseline as the default mode (direct
generation with `[S<i>]` citations, ALCE style)."""

from jaxmm.pipelines.genprog import pipeline

PIPELINE = pipeline("genprog_direct", default_mode="direct")
