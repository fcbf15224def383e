from vss_transformers.class_names import label_of, parse_names

NAMES = ("person", "vehicle", "object")


def test_ultralytics_names_metadata_parses_as_a_python_dict_literal() -> None:
    assert parse_names("{0: 'person', 1: 'vehicle', 2: 'object'}") == NAMES
    assert parse_names("['a', 'b']") == ("a", "b")
    assert parse_names("__import__('os')") == ()


def test_a_class_id_the_names_do_not_cover_is_labelled_by_its_number() -> None:
    assert label_of(1, NAMES) == "vehicle"
    assert label_of(3, NAMES) == "class_3"
    assert label_of(-1, NAMES) == "class_-1"
    assert label_of(0, ()) == "class_0"
