"""Search-algorithm plugins (entry-point group ``katibx.algorithms``) and their contract."""

from algorithms.base import AlgorithmSettingsError, SearchAlgorithm, Suggestion
from algorithms.grid_search import GridSearch
from algorithms.random_search import RandomSearch

__all__ = ["AlgorithmSettingsError", "GridSearch", "RandomSearch", "SearchAlgorithm", "Suggestion"]
