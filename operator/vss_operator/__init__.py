"""VSSModel control plane: CRD models, render, rollout decisions, kopf handlers and the `vss` CLI."""
