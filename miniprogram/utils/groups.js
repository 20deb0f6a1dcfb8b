/**
 * Leaving a group, as the Chats list and the group info page both offer it: an
 * owner of a group with other members is told to hand it over first (chatd
 * refuses that `leave` with `forbidden`); anyone else confirms, then
 * `chat.leave(room)`. `wxApi` is `wx`. Resolves to true when the user left.
 */
'use strict'

const HAND_OVER = 'Make someone else the owner first (Group info → tap a member → Make owner).'

function confirmLeave(wxApi, chat, room, title, role) {
  const members = role === 'owner' ? chat.roomInfo(room).then((info) => info.members, () => 1) : Promise.resolve(1)
  return members.then(
    (count) =>
      new Promise((resolve) => {
        if (role === 'owner' && count > 1) {
          wxApi.showModal({ title: 'Leave group', content: HAND_OVER, showCancel: false, complete: () => resolve(false) })
          return
        }
        wxApi.showModal({
          title: 'Leave group',
          content: 'Leave "' + title + '"? You will no longer receive its messages.',
          success: (res) => {
            if (res.confirm) chat.leave(room)
            resolve(!!res.confirm)
          },
          fail: () => resolve(false)
        })
      })
  )
}

module.exports = { confirmLeave, HAND_OVER }
