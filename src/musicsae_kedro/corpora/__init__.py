"""Corpus plugins: each yields ``Track`` records; discovered through entry points."""

from musicsae_kedro.corpora.base import CorpusPlugin, Track, get_corpus_plugin, list_corpus_plugins

__all__ = ["CorpusPlugin", "Track", "get_corpus_plugin", "list_corpus_plugins"]
