"""Kedro pipelines (glue: nodes unpack parameters, call the library, return results)."""
