"""Tests of jaxmm.generate (a package so its test module names cannot clash with others)."""
