// A confirmation as a modal <dialog>: the browser traps focus in it, Escape dismisses it, and
// focus returns to the button that opened it.

import {h} from './dom.js';

export function confirmAction({title, text, yes, no = 'Keep it', danger = false}) {
  return new Promise((resolve) => {
    const dialog = h('dialog', {class: 'confirm', 'aria-labelledby': 'confirm-title',
      'aria-describedby': 'confirm-text'},
    h('h2', {id: 'confirm-title'}, title),
    h('p', {id: 'confirm-text'}, text),
    h('form', {method: 'dialog', class: 'actions'},
      h('button', {value: 'no', class: 'quiet', autofocus: true}, no),
      h('button', {value: 'yes', class: danger ? 'danger' : 'primary'}, yes)));
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(dialog.returnValue === 'yes');
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}
