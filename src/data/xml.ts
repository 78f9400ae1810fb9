/**
 * A small strict XML parser, enough for PASCAL VOC `Annotations/*.xml`: elements, attributes,
 * text, comments, CDATA, processing instructions and the five predefined entities (plus
 * numeric ones). Mismatched or unclosed tags, a missing root or text after the root are
 * errors with a line number.
 * @module
 */

/** An XML element. */
export interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  /** Concatenated text content directly inside this element. */
  text: string;
}

const ENTITIES: Record<string, string> = {
  amp: "&",
  lt: "<",
  gt: ">",
  quot: '"',
  apos: "'",
};

function decodeEntities(s: string, err: (m: string) => never): string {
  return s.replace(/&([^;&\s]*);?/g, (m, name: string) => {
    if (!m.endsWith(";")) err(`unterminated entity '${m}'`);
    if (name.startsWith("#x")) return String.fromCodePoint(parseInt(name.slice(2), 16));
    if (name.startsWith("#")) return String.fromCodePoint(parseInt(name.slice(1), 10));
    const v = ENTITIES[name];
    if (v === undefined) err(`unknown entity '&${name};'`);
    return v;
  });
}

/** Parses an XML document and returns its root element; throws `Error` with a line number. */
export function parseXml(src: string): XmlElement {
  let pos = 0;
  const lineAt = (p: number) => src.slice(0, p).split("\n").length;
  const err = (m: string, p = pos): never => {
    throw new Error(`malformed XML at line ${lineAt(p)}: ${m}`);
  };
  const stack: XmlElement[] = [];
  let root: XmlElement | null = null;
  while (pos < src.length) {
    const lt = src.indexOf("<", pos);
    const textEnd = lt < 0 ? src.length : lt;
    if (textEnd > pos) {
      const raw = src.slice(pos, textEnd);
      if (stack.length) stack[stack.length - 1].text += decodeEntities(raw, err);
      else if (raw.trim()) err(`text outside the root element: '${raw.trim().slice(0, 20)}'`);
      pos = textEnd;
      continue;
    }
    if (src.startsWith("<!--", pos)) {
      const end = src.indexOf("-->", pos + 4);
      if (end < 0) err("unterminated comment");
      pos = end + 3;
    } else if (src.startsWith("<![CDATA[", pos)) {
      const end = src.indexOf("]]>", pos);
      if (end < 0) err("unterminated CDATA section");
      if (!stack.length) err("CDATA outside the root element");
      stack[stack.length - 1].text += src.slice(pos + 9, end);
      pos = end + 3;
    } else if (src.startsWith("<?", pos)) {
      const end = src.indexOf("?>", pos);
      if (end < 0) err("unterminated processing instruction");
      pos = end + 2;
    } else if (src.startsWith("<!", pos)) {
      const end = src.indexOf(">", pos);
      if (end < 0) err("unterminated declaration");
      pos = end + 1;
    } else if (src.startsWith("</", pos)) {
      const end = src.indexOf(">", pos);
      if (end < 0) err("unterminated closing tag");
      const name = src.slice(pos + 2, end).trim();
      const open = stack.pop();
      if (!open) err(`closing tag </${name}> without an opening tag`);
      else if (open.name !== name) err(`closing tag </${name}> does not match <${open.name}>`);
      pos = end + 1;
    } else {
      const m =
        /^<([A-Za-z_:][\w.:-]*)((?:\s+[A-Za-z_:][\w.:-]*\s*=\s*(?:"[^"<]*"|'[^'<]*'))*)\s*(\/?)>/
          .exec(src.slice(pos, pos + 4096));
      if (!m) err("bad start tag");
      const [whole, name, attrText, selfClose] = m!;
      const attrs: Record<string, string> = {};
      for (const a of attrText.matchAll(/([A-Za-z_:][\w.:-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)) {
        attrs[a[1]] = decodeEntities(a[2] ?? a[3], err);
      }
      const el: XmlElement = { name, attrs, children: [], text: "" };
      if (stack.length) stack[stack.length - 1].children.push(el);
      else if (root) err(`second root element <${name}>`);
      else root = el;
      if (!selfClose) stack.push(el);
      pos += whole.length;
    }
  }
  if (stack.length) err(`unclosed tag <${stack[stack.length - 1].name}>`, src.length);
  if (!root) err("no root element", 0);
  return root!;
}

/** The first child element named `name`, or undefined. */
export function child(el: XmlElement, name: string): XmlElement | undefined {
  return el.children.find((c) => c.name === name);
}

/** All child elements named `name`. */
export function childrenNamed(el: XmlElement, name: string): XmlElement[] {
  return el.children.filter((c) => c.name === name);
}
