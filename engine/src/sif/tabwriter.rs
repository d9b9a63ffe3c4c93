//! A port of the parts of Go's `text/tabwriter` that siftool uses (`flags = 0`, space padding),
//! so that `header` and `info` align exactly as siftool does, even when an image's launch script
//! or an object name contains tabs, newlines or bytes that are not UTF-8.
//!
//! Cells end at `\t` or `\v`, lines at `\n` or `\f`; a column block is a run of lines that have
//! a cell in that column, and every cell of a block is padded to the widest (in runes) plus
//! `padding`. The last cell of a line is not part of any column. A `\f`, or a line with a single
//! cell, flushes what is buffered. Text between two `0xff` bytes is escaped: kept, not split.

const ESCAPE: u8 = 0xff;

#[derive(Clone, Copy, Default)]
struct Cell {
    /// Bytes of text.
    size: usize,
    /// Width in runes.
    width: usize,
}

pub(crate) struct TabWriter {
    out: Vec<u8>,
    padding: usize,
    buf: Vec<u8>,
    /// Start of the text whose width is not yet counted.
    pos: usize,
    cell: Cell,
    in_escape: bool,
    lines: Vec<Vec<Cell>>,
    widths: Vec<usize>,
}

/// Runes in `b` as Go's `utf8.RuneCount` counts them: each invalid byte is one rune.
fn rune_count(mut b: &[u8]) -> usize {
    let mut n = 0;
    while !b.is_empty() {
        match std::str::from_utf8(b) {
            Ok(s) => return n + s.chars().count(),
            Err(e) => {
                let good = e.valid_up_to();
                n += std::str::from_utf8(&b[..good]).map_or(0, |s| s.chars().count());
                let bad = e.error_len().unwrap_or(b.len() - good).max(1);
                // Go counts every byte of an invalid sequence as a rune of its own.
                n += bad;
                b = &b[good + bad..];
            }
        }
    }
    n
}

impl TabWriter {
    /// `tabwriter.NewWriter(w, 0, 0, padding, ' ', 0)`.
    pub(crate) fn new(padding: usize) -> Self {
        TabWriter {
            out: Vec::new(),
            padding,
            buf: Vec::new(),
            pos: 0,
            cell: Cell::default(),
            in_escape: false,
            lines: vec![Vec::new()],
            widths: Vec::new(),
        }
    }

    /// What has been flushed so far (all of it after [`TabWriter::flush`]).
    pub(crate) fn into_output(self) -> Vec<u8> {
        self.out
    }

    fn append(&mut self, text: &[u8]) {
        self.buf.extend_from_slice(text);
        self.cell.size += text.len();
    }

    fn update_width(&mut self) {
        self.cell.width += rune_count(&self.buf[self.pos..]);
        self.pos = self.buf.len();
    }

    fn terminate_cell(&mut self) -> usize {
        let line = self.lines.last_mut().expect("always one line");
        line.push(self.cell);
        self.cell = Cell::default();
        line.len()
    }

    fn end_escape(&mut self) {
        self.update_width();
        self.cell.width = self.cell.width.saturating_sub(2); // the two escape bytes
        self.pos = self.buf.len();
        self.in_escape = false;
    }

    pub(crate) fn write(&mut self, text: &[u8]) {
        let mut n0 = 0;
        for (i, &ch) in text.iter().enumerate() {
            if !self.in_escape {
                match ch {
                    b'\t' | b'\x0b' | b'\n' | b'\x0c' => {
                        self.append(&text[n0..i]);
                        self.update_width();
                        n0 = i + 1;
                        let ncells = self.terminate_cell();
                        if ch == b'\n' || ch == b'\x0c' {
                            self.lines.push(Vec::new());
                            if ch == b'\x0c' || ncells == 1 {
                                self.flush();
                            }
                        }
                    }
                    ESCAPE => {
                        self.append(&text[n0..i]);
                        self.update_width();
                        n0 = i;
                        self.in_escape = true;
                    }
                    _ => {}
                }
            } else if ch == ESCAPE {
                self.append(&text[n0..=i]);
                n0 = i + 1;
                self.end_escape();
            }
        }
        self.append(&text[n0..]);
    }

    pub(crate) fn flush(&mut self) {
        if self.cell.size > 0 {
            if self.in_escape {
                self.end_escape();
            }
            self.terminate_cell();
        }
        self.format(0, 0, self.lines.len());
        self.buf.clear();
        self.pos = 0;
        self.cell = Cell::default();
        self.in_escape = false;
        self.lines = vec![Vec::new()];
        self.widths.clear();
    }

    fn format(&mut self, pos0: usize, line0: usize, line1: usize) -> usize {
        let mut pos = pos0;
        let mut line0 = line0;
        let column = self.widths.len();
        let mut this = line0;
        while this < line1 {
            if column + 1 >= self.lines[this].len() {
                this += 1;
                continue;
            }
            pos = self.write_lines(pos, line0, this);
            line0 = this;
            let mut width = 0;
            while this < line1 {
                let line = &self.lines[this];
                if column + 1 >= line.len() {
                    break;
                }
                width = width.max(line[column].width + self.padding);
                this += 1;
            }
            self.widths.push(width);
            pos = self.format(pos, line0, this);
            self.widths.pop();
            line0 = this;
        }
        self.write_lines(pos, line0, line1)
    }

    fn write_lines(&mut self, pos0: usize, line0: usize, line1: usize) -> usize {
        let mut pos = pos0;
        for i in line0..line1 {
            for (j, c) in self.lines[i].iter().enumerate() {
                if c.size > 0 {
                    self.out.extend_from_slice(&self.buf[pos..pos + c.size]);
                    pos += c.size;
                }
                if let Some(&w) = self.widths.get(j) {
                    self.out.resize(self.out.len() + w - c.width, b' ');
                }
            }
            if i + 1 == self.lines.len() {
                self.out.extend_from_slice(&self.buf[pos..pos + self.cell.size]);
                pos += self.cell.size;
            } else {
                self.out.push(b'\n');
            }
        }
        pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tab(padding: usize, text: &[u8]) -> String {
        let mut tw = TabWriter::new(padding);
        tw.write(text);
        tw.flush();
        String::from_utf8(tw.into_output()).unwrap()
    }

    #[test]
    fn aligns_one_block() {
        assert_eq!(tab(1, b"a:\t1\nlong:\t2\n"), "a:    1\nlong: 2\n");
        assert_eq!(tab(2, b"\tA:\tx\n\tBB:\ty\n"), "  A:   x\n  BB:  y\n");
    }

    #[test]
    fn a_line_without_tabs_splits_blocks() {
        assert_eq!(tab(1, b"a:\t1\nplain\nlong:\t2\n"), "a: 1\nplain\nlong: 2\n");
    }

    #[test]
    fn widths_count_runes() {
        assert_eq!(tab(1, "é:\t1\nab:\t2\n".as_bytes()), "é:  1\nab: 2\n");
        assert_eq!(rune_count(b"a\xffb\xe2\x82"), 5);
    }

    #[test]
    fn escaped_text_is_one_cell() {
        let out = {
            let mut tw = TabWriter::new(1);
            tw.write(b"\xffa\tb\xff:\t1\nx:\t2\n");
            tw.flush();
            tw.into_output()
        };
        assert_eq!(out, b"\xffa\tb\xff: 1\nx:   2\n");
    }

    #[test]
    fn nested_columns() {
        assert_eq!(tab(1, b"a\tb\tc\naa\tb\n"), "a  b c\naa b\n");
    }
}
