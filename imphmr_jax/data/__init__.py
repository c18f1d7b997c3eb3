"""Host-side data: pose sampling and synthetic dataset building."""
