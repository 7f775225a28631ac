"""Test support for katibx: helpers that are not product code (the fake Kubernetes API server lives in fake_kube)."""
