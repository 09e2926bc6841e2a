"""Search spaces: the space model (`nas.space.model`) and its YAML reader (`nas.space.reader`)."""

from nas.space.model import PartSpace, Placement, SearchSpace, StageSpace
from nas.space.reader import load_space, space_from_dict

__all__ = ["PartSpace", "Placement", "SearchSpace", "StageSpace", "load_space", "space_from_dict"]
