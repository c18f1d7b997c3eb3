"""NeuHMR's generalizable human NeRF (GHN): motion mapping 𝒯 (`motion`) and the renderer's parts."""
