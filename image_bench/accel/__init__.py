"""The fast paths: applied to a built model, they change no parameter and no state_dict key."""
