"""trainer: the sharded training runtime shared by MuLan and Noise2Music (the role t5x plays)."""
