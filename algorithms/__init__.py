"""Search-algorithm and early-stopping plugins, one module each, registered as entry points.

The contracts they implement live in the core (:class:`katibx.SearchAlgorithm`, :class:`katibx.EarlyStoppingAlgorithm`);
nothing here is imported until an experiment names the algorithm.
"""
