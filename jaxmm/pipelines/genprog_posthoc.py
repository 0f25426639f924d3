"""`genprog_posthoc`: the `genprog` pipeline with post-hoc attribution as the default mode
(the model answers, then writes a program per answer sentence whose leaves are its citations)."""

from jaxmm.pipelines.genprog import pipeline

PIPELINE = pipeline("genprog_posthoc", default_mode="posthoc")
