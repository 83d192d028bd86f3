"""Write small .xlsx files cell by cell, the way spreadsheet programs store them: numbers, shared
strings, booleans, formulas with their cached value, dates as serial numbers with a date style,
merged cells, several sheets. No Excel library: an .xlsx is a zip of a few XML parts.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape


@dataclasses.dataclass(frozen=True)
class Formula:
    expression: str  # e.g. "A2*2"
    cached: float | str  # the value the program computed and saved


@dataclasses.dataclass(frozen=True)
class DateSerial:
    serial: float  # days since 1899-12-30, as Excel stores a date
    style: str = "date"  # "date" (yyyy-mm-dd) or "datetime" (yyyy-mm-dd hh:mm:ss)


Cell = str | int | float | bool | None | Formula | DateSerial


@dataclasses.dataclass
class Sheet:
    name: str
    rows: list[list[Cell]]
    merged: list[str] = dataclasses.field(default_factory=list)  # e.g. ["A2:A3"]


def _column(index: int) -> str:
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(65 + rest) + name
    return name


def write_xlsx(path: Path, sheets: list[Sheet]) -> Path:
    strings: list[str] = []

    def shared(text: str) -> int:
        if text not in strings:
            strings.append(text)
        return strings.index(text)

    def cell(ref: str, value: Cell) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return f'<c r="{ref}" t="b"><v>{int(value)}</v></c>'
        if isinstance(value, (int, float)):
            return f'<c r="{ref}"><v>{value!r}</v></c>'
        if isinstance(value, DateSerial):
            return f'<c r="{ref}" s="{1 if value.style == "date" else 2}"><v>{value.serial!r}</v></c>'
        if isinstance(value, Formula):
            if isinstance(value.cached, str):
                return f'<c r="{ref}" t="str"><f>{escape(value.expression)}</f><v>{escape(value.cached)}</v></c>'
            return f'<c r="{ref}"><f>{escape(value.expression)}</f><v>{value.cached!r}</v></c>'
        return f'<c r="{ref}" t="s"><v>{shared(value)}</v></c>'

    sheet_xml = []
    for sheet in sheets:
        rows = "".join(
            f'<row r="{r + 1}">' + "".join(cell(f"{_column(c)}{r + 1}", v) for c, v in enumerate(row)) + "</row>"
            for r, row in enumerate(sheet.rows)
        )
        merged = (f'<mergeCells count="{len(sheet.merged)}">' + "".join(f'<mergeCell ref="{m}"/>' for m in sheet.merged)
                  + "</mergeCells>") if sheet.merged else ""
        sheet_xml.append(
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
            f"<sheetData>{rows}</sheetData>{merged}</worksheet>"
        )
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel_ns = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
    workbook = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook {ns} {rel_ns}><sheets>'
                + "".join(f'<sheet name="{escape(s.name)}" sheetId="{i + 1}" r:id="rId{i + 1}"/>' for i, s in enumerate(sheets))
                + "</sheets></workbook>")
    workbook_rels = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                     '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                     + "".join(f'<Relationship Id="rId{i + 1}" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
                               f'relationships/worksheet" Target="worksheets/sheet{i + 1}.xml"/>' for i in range(len(sheets)))
                     + f'<Relationship Id="rId{len(sheets) + 1}" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
                       'relationships/styles" Target="styles.xml"/>'
                     + f'<Relationship Id="rId{len(sheets) + 2}" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
                       'relationships/sharedStrings" Target="sharedStrings.xml"/></Relationships>')
    styles = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><styleSheet {ns}>'
              '<numFmts count="2"><numFmt numFmtId="164" formatCode="yyyy\\-mm\\-dd"/>'
              '<numFmt numFmtId="165" formatCode="yyyy\\-mm\\-dd\\ hh:mm:ss"/></numFmts>'
              '<fonts count="1"><font/></fonts><fills count="1"><fill/></fills><borders count="1"><border/></borders>'
              '<cellStyleXfs count="1"><xf/></cellStyleXfs>'
              '<cellXfs count="3"><xf numFmtId="0"/><xf numFmtId="164" applyNumberFormat="1"/>'
              '<xf numFmtId="165" applyNumberFormat="1"/></cellXfs></styleSheet>')
    content_types = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                     '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                     '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
                     '<Default Extension="xml" ContentType="application/xml"/>'
                     '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.'
                     'spreadsheetml.sheet.main+xml"/>'
                     + "".join(f'<Override PartName="/xl/worksheets/sheet{i + 1}.xml" ContentType="application/'
                               'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>' for i in range(len(sheets)))
                     + '<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.'
                       'spreadsheetml.styles+xml"/>'
                     '<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-'
                     'officedocument.spreadsheetml.sharedStrings+xml"/></Types>')
    root_rels = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                 '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                 '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
                 'officeDocument" Target="xl/workbook.xml"/></Relationships>')
    shared_xml = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><sst {ns} count="{len(strings)}" '
                  f'uniqueCount="{len(strings)}">' + "".join(f"<si><t>{escape(s)}</t></si>" for s in strings) + "</sst>")
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", content_types)
        z.writestr("_rels/.rels", root_rels)
        z.writestr("xl/workbook.xml", workbook)
        z.writestr("xl/_rels/workbook.xml.rels", workbook_rels)
        z.writestr("xl/styles.xml", styles)
        for i, xml in enumerate(sheet_xml):
            z.writestr(f"xl/worksheets/sheet{i + 1}.xml", xml)
        z.writestr("xl/sharedStrings.xml", shared_xml)  # last: the strings are collected while cells render
    return path
