"""Visual and semantic hash networks and their backbones."""
