"""Which files of an identity-mapping folder are read (``pipelines.select_table_files``)."""

from mp2amp.extract.pipelines import select_table_files


def test_markers_hidden_files_and_files_in_hidden_or_underscore_folders_are_left_out() -> None:
    listing = ["part-10.json", "part-2.json", "_SUCCESS", ".part-2.json.crc", "x/part-1",
               "_temporary/0/part-0.json", ".hidden/part-3.json", "d/.tmp/part-4.json"]
    assert select_table_files(listing) == ["part-2.json", "part-10.json", "x/part-1"]
