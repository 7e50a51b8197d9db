"""Model export and corpus tooling for pathfusion."""
