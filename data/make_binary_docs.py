"""Generate the binary (PDF, DOCX, XLSX, PPTX and a scanned page) documents of the sample knowledge base.

The text of each document is defined below. Output is deterministic: reportlab
runs with invariant=1 and the DOCX is written with fixed metadata and fixed ZIP
timestamps, so rerunning this script gives byte-identical files.

Usage:  python make_binary_docs.py        (writes into ./kb/ next to this file)
"""

import io
import datetime
import re
import zipfile
from pathlib import Path

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import (ListFlowable, ListItem, Paragraph,
                                SimpleDocTemplate, Spacer, Table, TableStyle)
import docx
from docx.shared import Pt

KB_DIR = Path(__file__).resolve().parent / "kb"
FIXED_DATE = datetime.datetime(2025, 3, 1, 9, 0, 0)
AUTHOR = "Halyard Robotics (fictional)"

# Each document is a list of blocks:
#   ("title", text) ("meta", text) ("h1", text) ("h2", text) ("p", text)
#   ("bullets", [text, ...]) ("table", [[cell, ...], ...])  first row = header

TRAVEL_POLICY = [
    ("title", "Travel Policy"),
    ("meta", "Owner: Finance and People Operations. Effective 1 February 2025."),
    ("p", "This policy covers business travel for all Halyard Robotics employees: "
          "visits to customer sites, trips between the Lisbon and Austin offices, "
          "trade fairs and conferences. General expense rules, approval limits and "
          "the Ledgerly claim process are in the Expense Policy."),
    ("h1", "Approval and Booking"),
    ("p", "Every trip must be approved by your manager before anything is booked. "
          "International trips longer than 10 days also need approval from your "
          "department head. All flights, trains, hotels and rental cars are booked "
          "through Meridian, our travel agency, using the Meridian booking tool. "
          "Bookings made outside Meridian are not reimbursed, except in emergencies."),
    ("p", "Book flights at least 14 days before departure. Later bookings are "
          "allowed when a customer emergency requires it, but the reason must be "
          "entered in the booking tool."),
    ("h1", "Flights"),
    ("bullets", [
        "Flights shorter than 6 hours: economy class.",
        "Flights of 6 hours or more: premium economy.",
        "Business class: only for flights longer than 10 hours, and only with "
        "approval from a VP.",
        "You may keep frequent flyer miles and hotel loyalty points, but loyalty "
        "programmes must never influence the choice of airline or hotel.",
    ]),
    ("h1", "Trains and Ground Transport"),
    ("p", "In Europe, prefer trains for journeys under 4 hours. Second class is "
          "standard; first class is allowed for train journeys longer than 3 hours. "
          "Use public transport, taxis or ride-hailing at your destination. Rental "
          "cars must be compact category unless you are carrying equipment, and you "
          "must accept the full insurance offered by the rental company."),
    ("h1", "Hotels"),
    ("p", "Meridian shows the nightly cap for each city. Caps include taxes but not "
          "breakfast. If every hotel near a customer site is above the cap, "
          "Meridian can approve an exception."),
    ("table", [
        ["City", "Nightly hotel cap"],
        ["Lisbon", "€140"],
        ["Rotterdam", "€160"],
        ["Madrid", "€130"],
        ["Other cities in Europe", "€150"],
        ["Austin", "$210"],
        ["New York", "$320"],
        ["Other cities in the US", "$200"],
    ]),
    ("h1", "Per Diem"),
    ("p", "Instead of claiming individual meals, travellers receive a daily "
          "allowance for meals and small incidental costs: €55 per day in Europe "
          "and $70 per day in the US. On the day you leave and the day you return, "
          "you receive half of the daily amount. No receipts are needed for the per "
          "diem. Meals with customers are claimed separately under the Expense "
          "Policy, and the per diem is not reduced for them."),
    ("h1", "Customer Site Visits"),
    ("p", "Tell the site contact at least 48 hours before you arrive, so they can "
          "arrange access and a safety induction. Safety shoes are required at every "
          "customer site. Halyard reimburses one pair of safety shoes up to €120 "
          "every 2 years. Sites provide high-visibility vests and any other "
          "site-specific protective equipment."),
    ("h1", "Insurance and Emergencies"),
    ("p", "All business travellers are covered by the company travel insurance with "
          "Atlas Assist, policy number HLY-TRV-2291. For medical or security "
          "emergencies while travelling, call the Atlas Assist 24/7 line on "
          "+351 210 555 014. Travel to countries on the restricted list kept by "
          "Security requires written approval from the Head of Security."),
    ("h1", "Adding Personal Days"),
    ("p", "You may add up to 5 personal days to a business trip, at your own cost, "
          "as long as the flight does not cost more than it would for the business "
          "dates alone. Take annual leave for the extra days. Travel insurance does "
          "not cover the personal part of the trip."),
]

RMA_PROCESS = [
    ("title", "Hardware Returns (RMA) Process"),
    ("meta", "Owner: Customer Support and Field Operations. Version 2.3, September 2024."),
    ("p", "This document describes how faulty Halyard hardware is returned, "
          "repaired or replaced. It applies to H2 robots and their parts, battery "
          "packs, Piers (charging docks) and top modules. Customer Support runs the "
          "process; field technicians follow it when they replace parts at a site."),
    ("h1", "Warranty Coverage"),
    ("bullets", [
        "H2 robots: 3 years or 12,000 operating hours, whichever comes first.",
        "Battery packs: 5 years from the date of installation.",
        "Piers and top modules: 2 years.",
        "Robots under a Robots-as-a-Service subscription are covered for the whole "
        "subscription term, regardless of age.",
    ]),
    ("p", "The warranty does not cover damage from misuse, such as loads above the "
          "rated payload, driving through standing water, or repairs attempted by "
          "anyone other than Halyard staff."),
    ("h1", "Step 1: Open a Support Ticket"),
    ("p", "The customer or a field technician opens a ticket in the support portal "
          "with the serial number (format H2-XXXXXX), a description of the fault and "
          "the time it was first seen. Support triages the ticket within 1 business "
          "day and first tries a remote diagnosis using robot logs. Many faults are "
          "solved remotely and never need a return."),
    ("h1", "Step 2: RMA Number"),
    ("p", "If a part must come back, Support issues an RMA number in the format "
          "RMA-YYYY-NNNNN, for example RMA-2025-00417. The RMA number must be written "
          "on the outside of the package. An RMA number is valid for 21 days: if the "
          "part has not been shipped by then, the RMA expires and a new ticket is "
          "needed."),
    ("h1", "Step 3: Shipping"),
    ("p", "Returns from Europe, the Middle East and Africa go to the EU repair depot "
          "in Venlo, the Netherlands. Returns from the Americas go to the Austin "
          "repair depot. Halyard pays shipping for all warranty returns."),
    ("p", "Battery packs are dangerous goods (UN3480) and may only be shipped in the "
          "Halyard battery crate, part number BC-48, which Support sends with the "
          "RMA. Never ship a battery that is swollen, leaking or hot; Support arranges "
          "a specialist hazardous-goods collection instead."),
    ("h1", "Advance Replacement"),
    ("p", "Customers on the Premier Care support plan receive a replacement part "
          "before they send the faulty one back. The replacement ships within 2 "
          "business days of the RMA being issued. The faulty part must still be "
          "returned within the RMA validity period, or it is invoiced at list price."),
    ("h1", "Step 4: Repair and Report"),
    ("p", "The target turnaround is 10 business days from the day the part arrives "
          "at the depot. The depot sends a repair report to the ticket, listing the "
          "fault found, the work done and the firmware version installed."),
    ("h1", "Charges"),
    ("bullets", [
        "No fault found: if the depot finds nothing wrong with a returned unit, a "
        "no-fault-found fee of €350 (or $380) per unit is charged.",
        "Out-of-warranty repairs are quoted before any work starts. Quotes are "
        "valid for 30 days.",
        "Unused spare parts can be returned within 60 days in their original "
        "packaging, with a 15% restocking fee.",
    ]),
    ("h1", "Contacts"),
    ("p", "RMA questions: rma@halyard.example. EU depot lead: Pieter Hoogland. "
          "Austin depot lead: Dana Whitcombe."),
]

DEPLOYMENT_GUIDE = [
    ("title", "Fleet Software Deployment Guide"),
    ("meta", "Owner: Release Engineering with Fleet Reliability. Applies to Harbor and Keel releases."),
    ("p", "This guide explains how new versions of our fleet software reach customer "
          "sites. Harbor is the cloud fleet manager; Keel is the software that runs "
          "on every robot. A bad release can stop a customer's warehouse, so every "
          "release goes through the same staged rollout, with automatic checks "
          "between stages."),
    ("h1", "Release Train"),
    ("p", "We release every second Tuesday. The release branch is cut on the "
          "Thursday before, at 16:00 Lisbon time; changes merged after the cut wait "
          "for the next train. Releases are named after the product and version, "
          "for example keel-7.4.0 or harbor-2025.06."),
    ("h1", "Rollout Stages"),
    ("h2", "Stage 1: Test warehouse"),
    ("p", "Every release first runs in the Austin test warehouse for a soak period "
          "of 48 hours, with robots running realistic mission loads around the "
          "clock. Release Engineering checks mission success rates, battery "
          "behaviour and crash reports before promoting."),
    ("h2", "Stage 2: Canary sites"),
    ("p", "The release then goes to our two canary sites, LIS-02 and DAL-01, for 72 "
          "hours. Canary customers are told about each release 2 days in advance."),
    ("h2", "Stage 3: General rollout"),
    ("p", "The remaining sites are updated in waves, each covering 25% of sites, "
          "with at least 24 hours between waves. Promote a release to the next stage "
          "with: halyardctl release promote --release <name> --stage <stage>"),
    ("h1", "Deployment Windows and Freezes"),
    ("p", "Software is only deployed to a site during that site's maintenance "
          "window, configured in Harbor. The default window is 22:00 to 04:00 local "
          "site time; customers can change it to match their shifts."),
    ("p", "Peak-season freeze: no releases are deployed to customer sites from "
          "20 November to 5 January, when warehouses handle holiday volumes. During "
          "the freeze only fixes for SEV1 incidents may be deployed, and only with "
          "approval from the CTO, Duarte Marinho."),
    ("h1", "Over-the-Air Updates on Robots"),
    ("p", "Robots download new Keel versions in the background. A robot installs an "
          "update only when it is docked on a Pier with its battery above 60%. "
          "Installation takes about 7 minutes per robot. At most 20% of a site's "
          "robots install at the same time, so the site keeps working. Each robot "
          "keeps its previous two Keel versions on disk for fast rollback."),
    ("h1", "Monitoring and Rollback"),
    ("h2", "Automatic rollback"),
    ("p", "After an update, Harbor watches each site. If the mission failure rate "
          "at a site rises above 2% over any 30-minute window, Harbor automatically "
          "rolls that site back to the previous version and pages the release "
          "owner."),
    ("h2", "Manual rollback"),
    ("p", "To roll back by hand, run: halyardctl release rollback --site "
          "<site-code> --to <version>. Post in #releases whenever you roll back, "
          "and stop further waves until the cause is understood."),
    ("h1", "Approvals and Change Records"),
    ("p", "Each release needs a change record in Helm (numbered CHG-NNNNN) with two "
          "approvals, at least one of them from Fleet Reliability. The change record "
          "lists the release notes, the rollback plan and the on-call engineer for "
          "the rollout."),
    ("h1", "Hotfixes"),
    ("p", "Urgent fixes may skip the 48-hour test warehouse soak, but must still "
          "run on the canary sites for at least 12 hours before general rollout, "
          "unless the CTO approves an exception for a SEV1."),
]


# ---------------------------------------------------------------- PDF ----

def build_pdf(blocks, path, title):
    styles = getSampleStyleSheet()
    body = styles["BodyText"]
    story = []
    for kind, content in blocks:
        if kind == "title":
            story.append(Paragraph(content, styles["Title"]))
        elif kind == "meta":
            story.append(Paragraph("<i>%s</i>" % content, body))
            story.append(Spacer(1, 4 * mm))
        elif kind == "h1":
            story.append(Paragraph(content, styles["Heading2"]))
        elif kind == "h2":
            story.append(Paragraph(content, styles["Heading3"]))
        elif kind == "p":
            story.append(Paragraph(content.replace("<", "&lt;").replace(">", "&gt;"), body))
        elif kind == "bullets":
            story.append(ListFlowable(
                [ListItem(Paragraph(t, body), leftIndent=12) for t in content],
                bulletType="bullet", start="•", leftIndent=12))
        elif kind == "table":
            t = Table(content, colWidths=[70 * mm, 45 * mm], hAlign="LEFT")
            t.setStyle(TableStyle([
                ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                ("GRID", (0, 0), (-1, -1), 0.5, colors.grey),
                ("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey),
            ]))
            story.append(Spacer(1, 2 * mm))
            story.append(t)
            story.append(Spacer(1, 2 * mm))
        else:
            raise ValueError(kind)
    doc = SimpleDocTemplate(str(path), pagesize=A4, title=title, author=AUTHOR,
                            leftMargin=20 * mm, rightMargin=20 * mm,
                            topMargin=20 * mm, bottomMargin=20 * mm, invariant=1)
    doc.build(story)


# --------------------------------------------------------------- DOCX ----

def build_docx(blocks, path, title):
    d = docx.Document()
    d.styles["Normal"].font.size = Pt(11)
    for kind, content in blocks:
        if kind == "title":
            d.add_heading(content, level=0)  # "Title" style
        elif kind == "meta":
            d.add_paragraph().add_run(content).italic = True
        elif kind == "h1":
            d.add_heading(content, level=1)  # "Heading 1"
        elif kind == "h2":
            d.add_heading(content, level=2)  # "Heading 2"
        elif kind == "p":
            d.add_paragraph(content)
        elif kind == "bullets":
            for t in content:
                d.add_paragraph(t, style="List Bullet")
        elif kind == "table":
            t = d.add_table(rows=0, cols=len(content[0]))
            t.style = "Table Grid"
            for row in content:
                cells = t.add_row().cells
                for c, v in zip(cells, row):
                    c.text = v
        else:
            raise ValueError(kind)
    cp = d.core_properties
    cp.title = title
    cp.author = AUTHOR
    cp.last_modified_by = AUTHOR
    cp.created = FIXED_DATE
    cp.modified = FIXED_DATE
    cp.last_printed = FIXED_DATE
    cp.revision = 1
    fixed_zip(d.save, path)


def fixed_zip(save, path, properties=None):
    """Write an Office file (`save` takes a file object) with fixed dates, so the bytes are reproducible."""
    if properties is not None:
        for name in ("created", "modified", "last_printed"):
            if hasattr(properties, name):
                setattr(properties, name, FIXED_DATE)
        if hasattr(properties, "creator"):
            properties.creator = AUTHOR
        if hasattr(properties, "lastModifiedBy"):
            properties.lastModifiedBy = AUTHOR
        if hasattr(properties, "last_modified_by"):
            properties.last_modified_by = AUTHOR
    buf = io.BytesIO()
    save(buf)
    buf.seek(0)
    with zipfile.ZipFile(buf) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in zin.namelist():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            data = zin.read(name)
            if name == "docProps/core.xml":  # openpyxl stamps the save time over `modified`
                data = re.sub(rb"(<dcterms:modified[^>]*>)[^<]*", rb"\g<1>" + FIXED_DATE.strftime("%Y-%m-%dT%H:%M:%SZ").encode(), data)
            zout.writestr(info, data)


# ------------------------------------------------- XLSX, PPTX, scanned page ----

SITE_REGISTER = [
    ["Customer", "Site", "Country", "H2 robots", "Go-live"],
    ["Brightwell Foods", "Leeds distribution centre", "United Kingdom", 24, datetime.date(2024, 5, 13)],
    ["Nordhavn Logistics", "Aarhus port warehouse", "Denmark", 16, datetime.date(2023, 11, 2)],
    ["Vale Pharma", "Porto cold store", "Portugal", 9, datetime.date(2024, 9, 30)],
    ["Cascadia Retail", "Tacoma returns hub", "United States", 31, datetime.date(2025, 1, 20)],
]
SITE_CONTACTS = [
    ["Site", "Halyard site lead", "Support plan"],
    ["Leeds distribution centre", "Oliver Grant", "Premier Care"],
    ["Aarhus port warehouse", "Freja Lund", "Standard"],
    ["Porto cold store", "Joana Pires", "Premier Care"],
    ["Tacoma returns hub", "Mason Reyes", "Standard"],
]


def build_xlsx(path, title):
    import openpyxl

    book = openpyxl.Workbook()
    sites = book.active
    sites.title = "Customer sites"
    for row in SITE_REGISTER:
        sites.append(row)
    for row in sites.iter_rows(min_row=2, min_col=5, max_col=5):
        for cell in row:
            cell.number_format = "yyyy-mm-dd"
    contacts = book.create_sheet("Site contacts")
    for row in SITE_CONTACTS:
        contacts.append(row)
    book.properties.title = title
    fixed_zip(book.save, path, book.properties)


ALL_HANDS = [  # (slide title, body lines, table rows or None, speaker notes)
    ("Q1 2025 all-hands", ["Halyard Robotics, 3 April 2025"], None, ""),
    ("Q1 in numbers", [], [["Metric", "Q1 2025"], ["H2 robots shipped", "148"], ["New customer sites", "7"],
                           ["Fleet uptime", "99.62%"], ["Support tickets closed", "1,904"]],
     "Uptime counts every customer site, planned maintenance excluded."),
    ("Office move", ["The Lisbon office moves to Avenida da Liberdade 212 on 1 July 2025.",
                     "Desks are packed by the movers on Friday 27 June."],
     None, "The movers are Transportes Tejo; questions go to facilities@halyard.example."),
]


def build_pptx(path, title):
    from pptx import Presentation
    from pptx.util import Inches, Pt

    deck = Presentation()
    for number, (heading, lines, table, notes) in enumerate(ALL_HANDS):
        slide = deck.slides.add_slide(deck.slide_layouts[0 if number == 0 else 5])
        slide.shapes.title.text = heading
        if number == 0:
            slide.placeholders[1].text = lines[0]
        elif lines:
            box = slide.shapes.add_textbox(Inches(0.7), Inches(1.8), Inches(8.6), Inches(3)).text_frame
            box.word_wrap = True
            box.text = lines[0]
            for line in lines[1:]:
                box.add_paragraph().text = line
            for paragraph in box.paragraphs:
                paragraph.runs[0].font.size = Pt(20)
        if table:
            shape = slide.shapes.add_table(len(table), 2, Inches(1), Inches(1.8), Inches(8), Inches(3))
            for r, row in enumerate(table):
                for c, value in enumerate(row):
                    shape.table.cell(r, c).text = value
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    deck.core_properties.title = title
    fixed_zip(deck.save, path, deck.core_properties)


FIRE_NOTICE = [
    ("FIRE SAFETY NOTICE - LISBON OFFICE", 44),
    ("", 30),
    ("If the fire alarm sounds, leave the building by the", 30),
    ("nearest stairway. Do not use the lifts.", 30),
    ("", 30),
    ("Assembly point: the square in front of the", 30),
    ("Rua Augusta arch.", 30),
    ("", 30),
    ("Fire wardens: Beatriz Lopes (floor 2) and Rui Matos (floor 3).", 30),
    ("The next fire drill is on 14 March 2025 at 10:30.", 30),
]


def build_scanned_pdf(path, title):
    """A page as a scanner makes it: an image with no text layer (only OCR can read it)."""
    from PIL import Image, ImageDraw, ImageFont

    font_file = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    page = Image.new("L", (1654, 2339), color=255)  # A4 at 200 dpi
    draw = ImageDraw.Draw(page)
    y = 180
    for text, size in FIRE_NOTICE:
        draw.text((140, y), text, fill=0, font=ImageFont.truetype(font_file, size))
        y += int(size * 1.7)
    page.save(path, "PDF", resolution=200.0, title=title, author=AUTHOR, creationDate=FIXED_DATE.timetuple(),
              modDate=FIXED_DATE.timetuple())


def main():
    KB_DIR.mkdir(parents=True, exist_ok=True)
    build_xlsx(KB_DIR / "customer-site-register.xlsx", "Customer Site Register")
    build_pptx(KB_DIR / "all-hands-2025-q1.pptx", "Q1 2025 All-Hands")
    build_scanned_pdf(KB_DIR / "fire-safety-notice-scan.pdf", "Fire Safety Notice (scan)")
    build_pdf(TRAVEL_POLICY, KB_DIR / "travel-policy.pdf", "Travel Policy")
    build_pdf(RMA_PROCESS, KB_DIR / "rma-process.pdf", "Hardware Returns (RMA) Process")
    build_docx(DEPLOYMENT_GUIDE, KB_DIR / "fleet-deployment-guide.docx",
               "Fleet Software Deployment Guide")
    print("wrote travel-policy.pdf, rma-process.pdf, fleet-deployment-guide.docx, customer-site-register.xlsx, "
          "all-hands-2025-q1.pptx, fire-safety-notice-scan.pdf to", KB_DIR)


if __name__ == "__main__":
    main()
