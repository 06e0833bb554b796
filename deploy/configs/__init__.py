"""The presets (one YAML config per environment), installed as the package data `magicmask.presets` so that
`magicmask run --config connect4` finds them from a wheel as well as from a clone. No code lives here."""
