"""S-CMRL: semantic-alignment cross-modal residual learning for audio-visual spiking networks."""
