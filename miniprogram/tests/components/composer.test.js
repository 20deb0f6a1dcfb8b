/**
 * <composer>: typing fills the box and fires `typing` (throttled); Send fires
 * `send` with the trimmed text and clears the box; blank text sends nothing.
 */
const path = require('path')
const simulate = require('miniprogram-simulate')

const ROOT = path.resolve(__dirname, '..', '..')
const id = simulate.load(path.join(ROOT, 'components/composer/composer'), { rootPath: ROOT })

function render(props) {
  const comp = simulate.render(id, props)
  comp.attach(document.createElement('parent-wrapper'))
  const sent = []
  const typing = []
  comp.addEventListener('send', (e) => sent.push(e.detail))
  comp.addEventListener('typing', () => typing.push(Date.now()))
  return { comp, sent, typing }
}

async function type(comp, value) {
  comp.querySelector('.input').dispatchEvent('input', { detail: { value } })
  await simulate.sleep(0)
}

test('input then tap Send emits the trimmed text once and clears the input', async () => {
  const { comp, sent } = render()
  await type(comp, '  hello world  ')
  expect(comp.data.value).toBe('  hello world  ')
  comp.querySelector('.send').dispatchEvent('tap')
  await simulate.sleep(0)
  expect(sent).toEqual([{ text: 'hello world' }])
  expect(comp.data.value).toBe('')
})

test('keyboard confirm sends like the button', async () => {
  const { comp, sent } = render()
  await type(comp, 'via keyboard')
  comp.querySelector('.input').dispatchEvent('confirm', { detail: { value: 'via keyboard' } })
  await simulate.sleep(0)
  expect(sent).toEqual([{ text: 'via keyboard' }])
})

test('blank text is not sent', async () => {
  const { comp, sent } = render()
  await type(comp, '   ')
  comp.querySelector('.send').dispatchEvent('tap')
  await simulate.sleep(0)
  expect(sent).toEqual([])
})

test('typing fires at most once per typingInterval', async () => {
  const { comp, typing } = render({ typingInterval: 10000 })
  await type(comp, 'a')
  await type(comp, 'ab')
  await type(comp, 'abc')
  expect(typing.length).toBe(1)
})

test('the placeholder is rendered and Send is disabled while the box is empty', () => {
  const { comp } = render({ placeholder: 'Message bob' })
  const json = comp.toJSON()
  const input = json.children[0].children[0]
  expect(input.attrs.find((a) => a.name === 'placeholder').value).toBe('Message bob')
  const button = json.children[0].children[1]
  expect(button.attrs.find((a) => a.name === 'disabled').value).toBe(true)
})

test('every input fires change with the value; setText fills the box without a change', async () => {
  const { comp, sent } = render()
  const changes = []
  comp.addEventListener('change', (e) => changes.push(e.detail.value))
  await type(comp, 'a')
  await type(comp, 'a@')
  expect(changes).toEqual(['a', 'a@'])
  comp.instance.setText('a@Bob ')
  expect(comp.data.value).toBe('a@Bob ')
  expect(changes).toEqual(['a', 'a@'])
  comp.querySelector('.send').dispatchEvent('tap')
  await simulate.sleep(0)
  expect(sent).toEqual([{ text: 'a@Bob' }])
})

test('media: "+" while the box is empty opens Photo/File (pick); with text it is Send again', async () => {
  const { comp } = render({ media: true })
  const picks = []
  comp.addEventListener('pick', (e) => picks.push(e.detail))
  expect(comp.querySelector('.send')).toBeUndefined()
  comp.querySelector('.plus').dispatchEvent('tap')
  await simulate.sleep(0)
  comp.querySelector('.photo').dispatchEvent('tap')
  await simulate.sleep(0)
  expect(picks).toEqual([{ type: 'photo' }])
  expect(comp.data.panel).toBe(false) // a pick closes the panel
  comp.querySelector('.plus').dispatchEvent('tap')
  await simulate.sleep(0)
  comp.querySelector('.file').dispatchEvent('tap')
  await simulate.sleep(0)
  expect(picks).toEqual([{ type: 'photo' }, { type: 'file' }])
  // the panel's Voice is hold-to-talk, like the button left of the box
  comp.querySelector('.plus').dispatchEvent('tap')
  await simulate.sleep(0)
  comp.querySelector('.voice').dispatchEvent('tap')
  await simulate.sleep(0)
  expect(comp.data).toMatchObject({ voice: true, panel: false })
  expect(comp.querySelector('.talk')).toBeDefined()
  comp.querySelector('.mode').dispatchEvent('tap')
  await simulate.sleep(0)
  expect(comp.data.voice).toBe(false)
  await type(comp, 'text now')
  expect(comp.querySelector('.plus')).toBeUndefined()
  expect(comp.querySelector('.send')).toBeDefined()
  // without `media` (room and DM pages of anonymous users) there is no "+" at all
  const plain = render()
  expect(plain.comp.querySelector('.plus')).toBeUndefined()
  expect(plain.comp.querySelector('.mode')).toBeUndefined()
})

test('hold to talk: voicestart on touch, voiceend on release; slid up over 60 px it cancels; a system interruption cancels', async () => {
  const { comp } = render({ media: true })
  const seen = []
  comp.addEventListener('voicestart', () => seen.push('start'))
  comp.addEventListener('voiceend', (e) => seen.push(e.detail))
  comp.querySelector('.mode').dispatchEvent('tap')
  await simulate.sleep(0)
  expect(comp.querySelector('.input')).toBeUndefined()
  const talk = () => comp.querySelector('.talk')
  expect(talk().dom.textContent).toBe('Hold to talk')
  talk().dispatchEvent('touchstart', { touches: [{ x: 10, y: 700 }] })
  await simulate.sleep(0)
  expect(talk().dom.textContent).toBe('Release to send')
  talk().dispatchEvent('touchmove', { touches: [{ x: 10, y: 690 }] })
  await simulate.sleep(0)
  expect(comp.data.cancelling).toBe(false)
  talk().dispatchEvent('touchend', { changedTouches: [{ x: 10, y: 690 }] })
  await simulate.sleep(0)
  talk().dispatchEvent('touchstart', { touches: [{ x: 10, y: 700 }] })
  await simulate.sleep(0)
  talk().dispatchEvent('touchmove', { touches: [{ x: 10, y: 600 }] })
  await simulate.sleep(0)
  expect(talk().dom.textContent).toBe('Release to cancel')
  talk().dispatchEvent('touchend', { changedTouches: [{ x: 10, y: 600 }] })
  await simulate.sleep(0)
  talk().dispatchEvent('touchstart', { touches: [{ x: 10, y: 700 }] })
  await simulate.sleep(0)
  talk().dispatchEvent('touchcancel', {})
  await simulate.sleep(0)
  expect(seen).toEqual(['start', { cancel: false }, 'start', { cancel: true }, 'start', { cancel: true }])
  expect(comp.data.recording).toBe(false)
})
