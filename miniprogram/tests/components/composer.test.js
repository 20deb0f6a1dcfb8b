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
