"""Networks as diffusers ``ModelMixin`` + ``ConfigMixin`` (no training, no pipelines here)."""
