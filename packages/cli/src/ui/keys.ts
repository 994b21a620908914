/**
 * Raw terminal input (stdin in raw mode) → keys. Handles the xterm/VT sequences real terminals send:
 * CSI (`ESC [`) and SS3 (`ESC O`) arrows, `ESC [5~`/`ESC [6~` pages, the several Home/End spellings, and several
 * keys in one chunk (key repeat, pastes). Unknown escape sequences are consumed whole and ignored, so they never
 * turn into stray characters in the filter.
 */

type KeyName =
  | 'up'
  | 'down'
  | 'left'
  | 'right'
  | 'pageup'
  | 'pagedown'
  | 'home'
  | 'end'
  | 'enter'
  | 'escape'
  | 'backspace'
  | 'tab'
  | 'delete'
  | 'ctrl-c'
  | 'char'

export interface Key {
  name: KeyName
  /** The character, for `char` keys (one code point, printable). */
  char?: string
}

const CSI_FINAL: Record<string, KeyName> = { A: 'up', B: 'down', C: 'right', D: 'left', H: 'home', F: 'end' }
const CSI_TILDE: Record<string, KeyName> = {
  '1': 'home',
  '7': 'home',
  '4': 'end',
  '8': 'end',
  '5': 'pageup',
  '6': 'pagedown',
  '3': 'delete',
}

/** Parse one chunk of raw input into keys, in order. A lone ESC (nothing after it in the chunk) is the Esc key. */
export function parseKeys(input: string | Uint8Array): Key[] {
  const s = typeof input === 'string' ? input : Buffer.from(input).toString('utf8')
  const keys: Key[] = []
  let i = 0
  while (i < s.length) {
    const c = s[i]!
    if (c === '\x1b') {
      const next = s[i + 1]
      if (next === '[' || next === 'O') {
        // Parameters are 0x30–0x3f, intermediates 0x20–0x2f, the final byte 0x40–0x7e.
        let j = i + 2
        while (j < s.length && s.charCodeAt(j) >= 0x20 && s.charCodeAt(j) <= 0x3f) j++
        const final = s[j]
        if (final === undefined) {
          i = s.length // truncated sequence: drop it rather than emit its bytes as characters
          continue
        }
        const params = s.slice(i + 2, j)
        const name = final === '~' ? CSI_TILDE[params.split(';')[0] ?? ''] : CSI_FINAL[final]
        if (name !== undefined) keys.push({ name })
        i = j + 1
        continue
      }
      if (next === '\x1b') {
        keys.push({ name: 'escape' })
        i += 1
        continue
      }
      // ESC alone, or Alt+key (ESC followed by a character): treat as Esc and drop the Alt-modified key.
      keys.push({ name: 'escape' })
      i += next === undefined ? 1 : 2
      continue
    }
    if (c === '\r' || c === '\n') {
      keys.push({ name: 'enter' })
      i += c === '\r' && s[i + 1] === '\n' ? 2 : 1
      continue
    }
    if (c === '\x7f' || c === '\b') keys.push({ name: 'backspace' })
    else if (c === '\t') keys.push({ name: 'tab' })
    else if (c === '\x03') keys.push({ name: 'ctrl-c' })
    else if (c.charCodeAt(0) >= 0x20 && !(c.charCodeAt(0) >= 0x80 && c.charCodeAt(0) <= 0x9f)) {
      const cp = s.codePointAt(i)!
      const ch = String.fromCodePoint(cp)
      keys.push({ name: 'char', char: ch })
      i += ch.length
      continue
    }
    // Other control characters (C0 and C1) are ignored.
    i++
  }
  return keys
}
